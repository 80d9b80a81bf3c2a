from dmabuf_inspect.cli.main import entry

entry()
