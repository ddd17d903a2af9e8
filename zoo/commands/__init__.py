"""One module per ``bzoo`` subcommand (see ``zoo.cli``)."""
