"""``_pump_c`` is ``_pump.py`` compiled: the same interface, stated there."""

from asyncws._pump import DIRECT_READ_MIN as DIRECT_READ_MIN
from asyncws._pump import LARGE_PAYLOAD as LARGE_PAYLOAD
from asyncws._pump import PAUSE_FAILURE as PAUSE_FAILURE
from asyncws._pump import PAUSE_QUEUE as PAUSE_QUEUE
from asyncws._pump import PAUSE_WRITE as PAUSE_WRITE
from asyncws._pump import MessagePump as MessagePump
from asyncws._pump import Receiving as Receiving
from asyncws._pump import Sent as Sent
