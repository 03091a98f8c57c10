"""Removing Stockade: from one node (:mod:`.node`) and, as the chart's uninstall hook, from every
node of a cluster (:mod:`.cluster`). Node-side: imported by the CLI only when asked for."""
