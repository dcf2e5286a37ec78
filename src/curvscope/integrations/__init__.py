"""Framework adapters (HuggingFace, Lightning, …), imported only when used; the core never imports the frameworks."""
