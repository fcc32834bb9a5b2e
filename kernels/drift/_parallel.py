"""One lock around every numba ``parallel=True`` call of the drift kernels.

numba's default threading layer (workqueue) is not safe for concurrent parallel launches: two threads
entering a parallel kernel at once abort the process. A service may score windows from several
threads (``asyncio.to_thread``), so launches are serialised here; each launch already uses every core.
"""

from __future__ import annotations

import threading

PARALLEL_LAUNCH = threading.Lock()
