"""The client side of Pigeon: the salt-api client and the command line behind ./stacks.py."""
