"""Exec argv with kernel same-page merging on for it and everything it starts.

prctl(PR_SET_MEMORY_MERGE, 1): every anonymous mapping of the process may
be merged by ksmd; Linux 6.7 and later keep the setting across fork and
exec. Usage: python3 ksm_exec.py /usr/sbin/dockerd [ARGS...]
"""

import ctypes
import os
import sys

PR_SET_MEMORY_MERGE = 67

libc = ctypes.CDLL("libc.so.6", use_errno=True)
if libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MEMORY_MERGE)")
os.execvp(sys.argv[1], sys.argv[1:])
