"""Root conftest: puts the checkout on sys.path so tests import `fixtures` (the lab) as a package."""
