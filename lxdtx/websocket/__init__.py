"""The daemon's websockets, all on Autobahn: the server side of every stream it serves
(`server`), the client side that migration and remote operations dial (`client`),
and the protocol options both sides share (`options`)."""

from lxdtx.websocket import speedups

speedups.install()
