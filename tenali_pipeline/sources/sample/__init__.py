"""Sample clients: the offline twin of every live client, with the same output schema.

Real data shipped inside installed packages where it exists (daily stock prices from
``bokeh_sampledata``, US quarterly macro series from ``statsmodels``); deterministic generated data
for the rest (crypto, filings, news, documents). Every row's ``source`` column starts with
``sample:`` so that nothing downstream mistakes it for live data.
"""

from .crypto import SampleCryptoClient
from .documents import SampleDocumentsClient
from .filings import SampleFilingsClient
from .macro import SampleMacroClient
from .market import SampleMarketClient
from .news import SampleNewsClient

__all__ = [
    "SampleCryptoClient",
    "SampleDocumentsClient",
    "SampleFilingsClient",
    "SampleMacroClient",
    "SampleMarketClient",
    "SampleNewsClient",
]
