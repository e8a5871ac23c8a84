"""DFGR for TorchRec."""
