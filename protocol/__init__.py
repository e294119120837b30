"""The wire contract (PROTOCOL.md), in one place: payloads the server accepts, the results
and broadcasts it sends, its error codes with their HTTP status, and the table of events.
The services speak it, the handlers and REST routes carry it, the API documents are built
from it. It imports nothing else of Tablecast's."""
