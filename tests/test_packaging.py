"""The conventions a Python package is held to: one version, its licence, its type marker, its changelog."""

from __future__ import annotations

import configparser
import re
import unittest

from pyworker import __version__
from tests.support import ROOT


class Packaging(unittest.TestCase):
    def setUp(self) -> None:
        self.setup = configparser.ConfigParser()
        self.setup.read(ROOT / "setup.cfg")

    def test_the_version_is_written_once(self) -> None:
        self.assertEqual(self.setup["metadata"]["version"], "attr: pyworker._version.__version__")
        self.assertRegex(__version__, r"^\d+\.\d+\.\d+$")

    def test_the_changelog_opens_with_this_version(self) -> None:
        first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
        self.assertIsNotNone(first)
        assert first is not None
        self.assertEqual(first.group(1), __version__)

    def test_the_licence_file_is_the_one_declared(self) -> None:
        self.assertEqual(self.setup["metadata"]["license"], "MIT")
        self.assertTrue((ROOT / "LICENSE").read_text().startswith("MIT License"))

    def test_the_package_says_it_is_typed_and_ships_the_marker(self) -> None:
        self.assertTrue((ROOT / "pyworker" / "py.typed").is_file())
        self.assertIn("py.typed", self.setup["options.package_data"]["pyworker"])


if __name__ == "__main__":
    unittest.main()
