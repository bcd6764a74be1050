"""docs/operations.md: its nginx and Caddy configurations pass the tools' own checks
(``nginx -t``, ``caddy validate``; ``make test`` installs both from Debian), and its systemd
unit has the sections and keys systemd needs."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "operations.md").read_text()


def block(lang: str) -> str:
    (body,) = re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)
    return body


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (apt-get install {name})")
    return path


def test_the_nginx_configuration_passes_nginx_t(tmp_path):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=cable.example.com",
         "-keyout", tmp_path / "key.pem", "-out", tmp_path / "cert.pem"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = block("nginx")
    # the certificate files named in the docs, replaced by a throw-away pair
    server = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {tmp_path / 'cert.pem'};", server)
    server = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {tmp_path / 'key.pem'};", server)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path / 'nginx.pid'};\nerror_log stderr;\nevents {{}}\nhttp {{\n{server}}}\n")
    done = subprocess.run([tool("nginx"), "-t", "-c", conf, "-p", tmp_path, "-e", "stderr"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
    for needed in ("proxy_set_header Upgrade $http_upgrade;", 'proxy_set_header Connection "upgrade";',
                   "proxy_buffering off;", "listen 443 ssl;"):  # fmt: skip
        assert needed in server


def test_the_caddyfile_passes_caddy_validate(tmp_path):
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(block("caddyfile"))
    done = subprocess.run([tool("caddy"), "validate", "--config", caddyfile, "--adapter", "caddyfile"],
                          capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "flush_interval -1" in block("caddyfile")


def test_the_systemd_unit_has_what_systemd_needs():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(block("ini"))
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"].startswith("/") and "pycable" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) > 30  # > --shutdown_timeout
    assert int(service["LimitNOFILE"]) >= 65536
