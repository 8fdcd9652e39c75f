"""Python 2 launcher for the real Autobahn|Testsuite ``wstest``, confined to loopback.

Run it with the wstest virtualenv's interpreter, with the same arguments as ``wstest``
(``compliance/.venv-wstest/bin/python compliance/wstest_loopback.py -m fuzzingserver -s
spec.json``). Stock wstest binds every interface and, in fuzzingserver mode, opens a web
UI on port 8080. This launcher wraps Twisted's ``reactor.listenTCP`` / ``listenSSL`` so
that every listening socket is bound to 127.0.0.1, adds ``-u 0`` (no web UI) unless a
web port was given explicitly, and then calls wstest's own entry point unchanged.
"""

import sys

LOOPBACK = "127.0.0.1"


def _force_loopback(reactor):
    """Replace reactor.listenTCP/listenSSL by versions that bind 127.0.0.1 only."""
    orig_tcp = reactor.listenTCP
    orig_ssl = reactor.listenSSL

    def listen_tcp(port, factory, backlog=50, interface=""):
        return orig_tcp(port, factory, backlog, LOOPBACK)

    def listen_ssl(port, factory, context_factory, backlog=50, interface=""):
        return orig_ssl(port, factory, context_factory, backlog, LOOPBACK)

    reactor.listenTCP = listen_tcp
    reactor.listenSSL = listen_ssl


def _disable_web_ui(argv):
    """Return argv with ``-u 0`` appended unless a web port is already given."""
    for arg in argv:
        if (
            arg in ("-u", "--webport")
            or arg.startswith("--webport=")
            or (arg.startswith("-u") and len(arg) > 2)
        ):
            return argv
    return argv + ["-u", "0"]


def main():
    # Importing wstest installs the reactor it prefers (autobahntestsuite.choosereactor);
    # patch that reactor before wstest starts listening on anything.
    from autobahntestsuite import wstest
    from twisted.internet import reactor

    _force_loopback(reactor)
    sys.argv = ["wstest"] + _disable_web_ui(sys.argv[1:])
    return wstest.run()


if __name__ == "__main__":
    sys.exit(main())
