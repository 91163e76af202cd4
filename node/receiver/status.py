"""C-STORE response statuses the receiver uses (PS3.4 Table B.2-1 and GG.4-1)."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # spool below its free-space floor, or the store failed
DATASET_MISMATCH = 0xA900  # dataset and request disagree on SOP class or instance
CANNOT_UNDERSTAND = 0xC000  # dataset unreadable
INVALID_UID = 0xC001  # a required UID is empty or malformed (would not be a safe path)
SOP_CLASS_NOT_SUPPORTED = 0x0122  # a C-STORE on a context that is not a storage class
