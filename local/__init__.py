"""The local stack: what Lambda, DynamoDB Streams and EventBridge do when deployed, on one machine.

Never deployed. `python -m local` (or `make run`) starts moto, the Chalice app's HTTP server,
the stream pump and the scheduler, all bound to 127.0.0.1.
"""
