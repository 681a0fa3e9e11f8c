"""Tempest plugin: API tests of a Glance deployed with sizeaware."""
