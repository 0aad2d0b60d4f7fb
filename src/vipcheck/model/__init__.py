"""The model: frozen facts about cluster and nodes, so checks never see raw text or clients."""
