"""The one thing pyproject.toml can't say: the optional C walk of fd tables (dmabuf_inspect/kernel/_fdwalk.c).

`optional=True`: without a C compiler or Python's headers the install still succeeds, and the scan
uses os.stat() instead (the same results, slower).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("dmabuf_inspect.kernel._fdwalk", ["dmabuf_inspect/kernel/_fdwalk.c"], optional=True)])
