"""exec argv with KSM on for every anonymous mapping of it and its descendants (prctl PR_SET_MEMORY_MERGE, Linux >= 6.7 keeps it across exec)."""
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
if libc.prctl(67, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_MEMORY_MERGE)")
os.execvp(sys.argv[1], sys.argv[1:])
