"""The CLI's commands: each a function of the parsed arguments returning an exit code.

`reads` look (``usage``, ``top``, ``audit``), `changes` change a customer through the
guard (``assign``, ``override``, ``revoke``, ``restore``, ``reset``), `plans` check and
export plans, `demo` runs the demo of a source checkout.
"""
