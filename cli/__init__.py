"""The `kbrec` command line (the top layer): one module per subcommand in `cli.commands`."""
