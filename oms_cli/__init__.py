"""The `oms` command line: a client of the REST API, installed with the dev set-up, never deployed."""
