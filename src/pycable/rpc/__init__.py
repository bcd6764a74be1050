"""Controllers: how connections are authenticated and channel commands handled."""
