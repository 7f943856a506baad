"""`python -m clcnn` runs the command line."""
from .cli import run

run()
