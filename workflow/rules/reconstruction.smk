# Filled by the reconstruction stage (see docs/contracts.md).
