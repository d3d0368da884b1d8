"""The read path: is the ledger what was sealed?

``verify`` walks the ledger and recomputes every link (``verify``), with the forward-secure
epoch rule (``epochs``), from a retention anchor when entries were pruned (``anchors``), and
against the witnessed checkpoints (``witness_check``); ``replay`` rebuilds the chain from the
topic and compares it with the ledger, or rebuilds a ledger. These return reports and
statuses; turning them into exit codes is the CLI's policy.
"""
