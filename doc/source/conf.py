"""Sphinx configuration for the sizeaware documentation."""

project = 'sizeaware'
copyright = 'sizeaware developers'
extensions = ['sphinx.ext.autodoc', 'oslo_config.sphinxext']
autodoc_mock_imports = ['uwsgi']
master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
