"""A user problem module that calls ``sys.exit`` while it is imported (named
``tests.support.exit_on_import_problem:make``): SystemExit is no Exception, and must not end the command."""

from __future__ import annotations

import sys

sys.exit("the data server is down")
