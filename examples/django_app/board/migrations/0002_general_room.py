from django.db import migrations


def create_general(apps, schema_editor):
    apps.get_model("board", "Room").objects.get_or_create(name="general")


class Migration(migrations.Migration):
    dependencies = [("board", "0001_initial")]

    operations = [migrations.RunPython(create_general, migrations.RunPython.noop)]
