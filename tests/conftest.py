import os
import sys

# tests import the top-level modules (schedule, model, ...) and tests/synthetic.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
