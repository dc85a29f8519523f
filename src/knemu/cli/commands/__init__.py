"""One module per ``knemu`` subcommand or family (``patch``: patch and scale; ``local``: up and
down; ``components``: apiserver, agent, dns), named by ``knemu.cli.TABLE``."""
