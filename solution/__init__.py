"""The shipped program (template): see README.md in this folder.

Device-side code: Python 3.6 syntax, torch 1.10 / torchvision 0.11 API, and
only the packages of the device image. ``lowpower package`` copies
this folder into the package next to the generated manifest and weights.
"""
