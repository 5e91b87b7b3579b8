"""Package layout: templates/ at the repository root installs as the supportbot.templates package."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["core", "core.*", "mail_gateway", "mail_gateway.*", "bot", "bot.*",
                                "supportbot", "supportbot.*"]),
        "supportbot.templates",
    ],
    package_dir={"supportbot.templates": "templates"},
    package_data={
        "supportbot": ["config.example.toml"],
        "supportbot.templates": ["**/*.j2", "**/*.css"],
        "core.migrations": ["script.py.mako"],
    },
)
