"""Root conftest: the checkout is on sys.path, so tests import the lab (`fixtures`) as a package."""
