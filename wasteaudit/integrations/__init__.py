"""Adapters for frameworks and servers, each behind its own extra (``wasteaudit[langchain]``, ...).

Import the one you need (``wasteaudit.integrations.langchain``); nothing here is imported by
``import wasteaudit``.
"""
