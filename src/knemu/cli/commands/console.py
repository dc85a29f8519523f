"""``knemu console``: the web console's URL (the api-server serves it at ``/console/``).

Prints the URL of the api-server the CLI talks to (``--server`` / ``$KNEMU_SERVER`` / the
kubeconfig) after checking that it answers; ``--open`` also opens it in the default browser.
When the kubeconfig's user has a bearer token (the admin kubeconfig ``knemu up`` writes has
one), the URL is a sign-in link: the token rides in the fragment (``#token=...``), which a
browser never sends to a server, and the sign-in page trades it for a session cookie.
"""

from __future__ import annotations

import argparse
import urllib.parse
import webbrowser

from knemu.cli.client import ApiClient


def console_url(server: str, token: str = "") -> str:
    if token:
        return server.rstrip("/") + "/console/login#" + urllib.parse.urlencode({"token": token})
    return server.rstrip("/") + "/console/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open", action="store_true", help="open it in the default browser")


def run(args: argparse.Namespace) -> int:
    client: ApiClient = args.client
    client.request("GET", "/version")  # a clear error now beats a browser's blank page
    url = console_url(client.server, client.credentials.token)
    print(url)
    if args.open and not webbrowser.open(url):
        print("no browser found here: open the URL above yourself")
    return 0
