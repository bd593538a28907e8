"""The yardstick's train script; a dry run only reads it."""
