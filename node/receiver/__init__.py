"""The DICOM front door: C-ECHO and C-STORE SCP writing into the spool and the job store."""
