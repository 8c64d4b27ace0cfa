package admission

import (
	"context"
	"net"
	"net/http"
	"net/netip"

	"google.golang.org/grpc/peer"

	"github.com/netprobe/netprobe/service"
)

// Caller is who a limit counts against: the authenticated caller, or for
// an anonymous one the peer's IPv4 address or IPv6 /64 (a host commonly
// has a whole /64 to pick addresses from). It is a value, not a string,
// so that counting a probe allocates nothing.
type Caller struct {
	name string
	peer netip.Prefix
}

// CallerOf is the caller of ctx, as the limits count it: the name
// Identify gave it, or else its address.
func CallerOf(ctx context.Context) Caller {
	if name := service.CallerFrom(ctx); name != "" {
		return Caller{name: name}
	}
	if p, ok := peer.FromContext(ctx); ok {
		return Caller{peer: sourceOf(p.Addr)}
	}
	return Caller{}
}

func (c Caller) String() string {
	switch {
	case c.name != "":
		return c.name
	case c.peer.IsValid() && c.peer.Addr().Is4():
		return "peer " + c.peer.Addr().String()
	case c.peer.IsValid():
		return "peer " + c.peer.String()
	}
	return "anonymous"
}

// WithPeer is ctx with addr, an HTTP request's RemoteAddr ("host:port"),
// as its peer: what names an anonymous caller of the limits, as gRPC's
// peer does.
func WithPeer(ctx context.Context, addr string) context.Context {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ctx = peer.NewContext(ctx, &peer.Peer{Addr: net.TCPAddrFromAddrPort(ap)})
	}
	return ctx
}

// PeerOf is the context of r with its peer (see WithPeer).
func PeerOf(r *http.Request) context.Context { return WithPeer(r.Context(), r.RemoteAddr) }
