import os
import sys

# the tests import the project's top-level modules (schedule, train, model, ...) and tests/helpers.py; prepare/'s
# modules are imported the way its scripts see them (tests/test_prepare.py adds prepare/ itself)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
