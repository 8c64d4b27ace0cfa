package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/reload"
	"github.com/netprobe/netprobe/internal/wire"
)

// describeTimeout bounds asking a peer who it is.
const describeTimeout = 5 * time.Second

// A source is one --peers value: a name whose addresses are the peers
// (dns:///NAME:PORT), or one peer (HOST:PORT, HOST resolved too).
type source struct {
	host string
	port uint16
}

func parseSource(s string) (source, error) {
	hostport := strings.TrimPrefix(s, "dns:///")
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return source{}, fmt.Errorf("--peers %q: want dns:///NAME:PORT or HOST:PORT: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 || host == "" {
		return source{}, fmt.Errorf("--peers %q: want dns:///NAME:PORT or HOST:PORT, PORT a number 1-65535", s)
	}
	return source{host: host, port: uint16(port)}, nil
}

// Peer is what a node knows of one of its peers.
type Peer struct {
	// Addr is where the peer is reached.
	Addr netip.AddrPort
	// Node and Labels are who it said it is (Describe); empty until it has.
	Node   string
	Labels map[string]string
	// Instance is the peer's process (DescribeResponse.instance): two
	// addresses of one instance, such as a pod's IPv4 and IPv6, are one
	// node.
	Instance string
	// Self is true when the peer is this node itself.
	Self bool
	// Up is whether it answered when last asked; Err is why not.
	// LastContact is when it last answered.
	Up          bool
	LastContact time.Time
	Err         string
}

type peer struct {
	Peer
	conn *grpc.ClientConn
}

// Peers are a node's peers, found from Config.Peers and asked who they
// are, again every Config.PeersRefresh and after one fails.
type Peers struct {
	sources  []source
	refresh  time.Duration
	resolver *net.Resolver
	creds    credentials.TransportCredentials
	token    string
	// named says whether the peers can tell this node from anyone (a
	// token, or a client certificate): only then does it name callers.
	named  bool
	self   string // this node's instance
	logger *slog.Logger
	kick   chan struct{}
	// gauge counts the peers by state, when set.
	gauge *prometheus.GaugeVec

	mu    sync.Mutex
	peers map[netip.AddrPort]*peer
}

// NewPeers is the peers cfg names, found with resolver, for the node of
// instance self. It reads the peer token and CA files now.
func NewPeers(cfg Config, resolver *net.Resolver, self string, logger *slog.Logger) (*Peers, error) {
	p := &Peers{refresh: cfg.PeersRefresh, resolver: resolver, self: self, logger: logger,
		kick: make(chan struct{}, 1), peers: map[netip.AddrPort]*peer{}, creds: insecure.NewCredentials()}
	for _, s := range cfg.Peers {
		src, err := parseSource(s)
		if err != nil {
			return nil, err
		}
		p.sources = append(p.sources, src)
	}
	if cfg.PeerCAFile != "" {
		pem, err := reload.ReadFile(cfg.PeerCAFile)
		if err != nil {
			return nil, fmt.Errorf("--peer-ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--peer-ca-file: no certificate in %s", cfg.PeerCAFile)
		}
		// A peer is dialled at an address DNS gave: its certificate is
		// checked against that IP unless the fleet shares a name.
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12, ServerName: cfg.PeerServerName}
		if tc.Certificates, err = peerCertificate(cfg); err != nil {
			return nil, err
		}
		p.named = len(tc.Certificates) > 0
		p.creds = credentials.NewTLS(tc)
	} else if cfg.PeerCertFile != "" || cfg.PeerKeyFile != "" {
		return nil, errors.New("--peer-cert-file: a certificate goes to peers over TLS only: give --peer-ca-file")
	} else if cfg.PeerServerName != "" {
		return nil, errors.New("--peer-server-name: peers' certificates are checked over TLS only: give --peer-ca-file")
	}
	if cfg.PeerTokenFile != "" {
		if cfg.PeerCAFile == "" {
			return nil, errors.New("--peer-token-file: a token goes to peers over TLS only: give --peer-ca-file")
		}
		b, err := reload.ReadFile(cfg.PeerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("--peer-token-file: %w", err)
		}
		if p.token = strings.TrimSpace(string(b)); p.token == "" || strings.ContainsAny(p.token, " \t\r\n") {
			return nil, fmt.Errorf("--peer-token-file: %s must hold the token alone, one word (not NAME TOKEN, as --tokens-file has it)", cfg.PeerTokenFile)
		}
		p.named = true
	}
	return p, nil
}

// peerCertificate is the client certificate of --peer-cert-file and
// --peer-key-file, if any.
func peerCertificate(cfg Config) ([]tls.Certificate, error) {
	switch {
	case cfg.PeerCertFile == "" && cfg.PeerKeyFile == "":
		return nil, nil
	case cfg.PeerCertFile == "" || cfg.PeerKeyFile == "":
		return nil, errors.New("--peer-cert-file and --peer-key-file go together")
	}
	cert, err := tls.LoadX509KeyPair(cfg.PeerCertFile, cfg.PeerKeyFile)
	if err != nil {
		return nil, fmt.Errorf("--peer-cert-file: %w", err)
	}
	return []tls.Certificate{cert}, nil
}

// Configured says whether there are peers to fan out to.
func (p *Peers) Configured() bool { return len(p.sources) > 0 }

// Run keeps the peers current until ctx ends.
func (p *Peers) Run(ctx context.Context) {
	if !p.Configured() {
		return
	}
	for {
		p.Refresh(ctx)
		wait := p.refresh
		if p.anyDown() {
			// A peer starting up, or away a moment, is looked at again
			// soon rather than a refresh later.
			wait = min(wait, downRetry)
		}
		tick := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			p.mu.Lock()
			for _, x := range p.peers {
				x.conn.Close()
			}
			p.peers = map[netip.AddrPort]*peer{}
			p.mu.Unlock()
			return
		case <-tick.C:
		case <-p.kick:
		}
		tick.Stop()
	}
}

// downRetry is how soon a peer that did not answer is asked again.
const downRetry = 2 * time.Second

// peerKeepalive is how long a connection to a peer may carry a call
// without a frame from it before it is pinged, and peerKeepaliveTimeout how
// long the ping may go unanswered before the connection, and the calls on
// it, are given up. The time is over the 10 s that a peer allows by default
// (--keepalive-min-time).
const (
	peerKeepalive        = 15 * time.Second
	peerKeepaliveTimeout = 5 * time.Second
)

// peerReadBuffer is the read buffer of a connection to a peer.
const peerReadBuffer = 32 << 10

// peerBackoff is gRPC's backoff, at most downRetry apart.
var peerBackoff = backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: downRetry}

// anyDown says whether a peer did not answer when last asked.
func (p *Peers) anyDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, x := range p.peers {
		if !x.Up {
			return true
		}
	}
	return false
}

// Failed asks for the peers to be looked at again soon: one failed.
func (p *Peers) Failed() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Refresh resolves the peers' names, connects to new addresses, forgets
// those gone, and asks each peer who it is.
func (p *Peers) Refresh(ctx context.Context) {
	addrs := map[netip.AddrPort]bool{}
	for _, src := range p.sources {
		ips, err := p.resolver.LookupNetIP(ctx, "ip", src.host)
		if err != nil {
			p.logger.Warn("peers: cannot resolve", "name", src.host, "err", err)
			continue
		}
		for _, ip := range ips {
			addrs[netip.AddrPortFrom(ip.Unmap(), src.port)] = true
		}
	}
	p.mu.Lock()
	for a, x := range p.peers {
		if !addrs[a] {
			x.conn.Close()
			delete(p.peers, a)
			p.logger.Info("peer gone", "addr", a, "node", x.Node)
		}
	}
	var all []*peer
	for a := range addrs {
		x := p.peers[a]
		if x == nil {
			conn, err := grpc.NewClient("passthrough:///"+a.String(), append(wire.DialOptions(), grpc.WithTransportCredentials(p.creds),
				// A peer that is away is redialled as often as it is looked
				// at, not on gRPC's backoff, which grows to 2 minutes: a node
				// back from a restart answers fan-outs within seconds.
				grpc.WithConnectParams(grpc.ConnectParams{Backoff: peerBackoff}),
				// gRPC's own 32 KiB read buffer, not the 1 MiB the wire sets
				// for Fetch's chunks: a peer sends small results, and an
				// entry holds a connection to every node (bench: 200 nodes,
				// the entry idle 94 -> 53 MiB, fanning out 168 -> 59 MiB).
				grpc.WithReadBufferSize(peerReadBuffer),
				// A peer that stops answering (frozen, or cut off without a
				// reset) fails the fan-outs it is in within peerKeepalive
				// and its timeout, even when the caller set no deadline.
				grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: peerKeepalive, Timeout: peerKeepaliveTimeout}))...)
			if err != nil {
				p.logger.Error("peer: cannot make a client", "addr", a, "err", err)
				continue
			}
			x = &peer{Peer: Peer{Addr: a}, conn: conn}
			p.peers[a] = x
		}
		all = append(all, x)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, x := range all {
		wg.Go(func() { p.describe(ctx, x) })
	}
	wg.Wait()
	if p.gauge != nil {
		up := 0
		for _, x := range all {
			p.mu.Lock()
			if x.Up {
				up++
			}
			p.mu.Unlock()
		}
		p.gauge.WithLabelValues("up").Set(float64(up))
		p.gauge.WithLabelValues("down").Set(float64(len(all) - up))
	}
}

// describe asks x who it is.
func (p *Peers) describe(ctx context.Context, x *peer) {
	ctx, cancel := context.WithTimeout(p.outgoing(ctx, ""), describeTimeout)
	defer cancel()
	d, err := netprobev1.NewProbeServiceClient(x.conn).Describe(ctx, &netprobev1.DescribeRequest{})
	if err == nil {
		// What a peer says of itself becomes columns, metric labels and
		// log lines here: it is held to what --node-name and --label
		// allow, as this node's own name is.
		err = checkDescribed(d)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if x.Up || x.Err == "" {
			p.logger.Warn("peer does not answer", "addr", x.Addr, "node", x.Node, "err", err)
		}
		x.Up, x.Err = false, err.Error()
		return
	}
	// A peer is this node only when it is reached at one of this
	// machine's addresses: anyone may read the instance (Describe), and
	// a peer claiming it could otherwise hide itself, or speak for this
	// node.
	self := d.GetInstance() == p.self && isLocal(x.Addr.Addr())
	if !x.Up {
		p.logger.Info("peer up", "addr", x.Addr, "node", d.GetNode(), "self", self)
		for _, y := range p.peers {
			if y != x && y.Up && y.Node == d.GetNode() && y.Instance != d.GetInstance() {
				p.logger.Warn("two peers have one node name: results name them by address as well; give each its own --node-name",
					"node", d.GetNode(), "addr", x.Addr, "other", y.Addr)
			}
		}
	}
	x.Up, x.Err, x.LastContact = true, "", time.Now()
	x.Node, x.Labels, x.Instance, x.Self = d.GetNode(), d.GetLabels(), d.GetInstance(), self
}

// isLocal says whether a is an address of this machine: a loopback
// address, or one of its interfaces'.
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// maxLabels is the most labels a node may have, its own (--label) or a
// peer's as it describes itself.
const maxLabels = 32

// checkDescribed refuses a peer's Describe answer whose name or labels
// this node would refuse of itself.
func checkDescribed(d *netprobev1.DescribeResponse) error {
	if err := checkLabelText("its node name", d.GetNode()); err != nil {
		return fmt.Errorf("the peer describes itself amiss: %w", err)
	}
	if n := len(d.GetLabels()); n > maxLabels {
		return fmt.Errorf("the peer describes itself amiss: %d labels, over %d", n, maxLabels)
	}
	for k, v := range d.GetLabels() {
		if err := errors.Join(checkLabelText("a label key", k), checkLabelText("a label value", v)); err != nil {
			return fmt.Errorf("the peer describes itself amiss: %w", err)
		}
	}
	return nil
}

// outgoing is ctx for a call to a peer: with this node's token, if any,
// and the name of the caller it forwards, if any. Without a token or a
// client certificate the peer could not tell this node from anyone: it is
// sent no name, and knows the call as this node's, by its address.
func (p *Peers) outgoing(ctx context.Context, caller string) context.Context {
	var kv []string
	if p.token != "" {
		kv = append(kv, "authorization", "Bearer "+p.token)
	}
	if caller != "" && p.named {
		kv = append(kv, CallerHeader, caller)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// All are the peers as last seen, by node name then address.
func (p *Peers) All() []Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Peer, 0, len(p.peers))
	for _, x := range p.peers {
		out = append(out, x.Peer)
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return out
}

// conn is the connection to the peer at a, if it is still one.
func (p *Peers) conn(a netip.AddrPort) *grpc.ClientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if x := p.peers[a]; x != nil {
		return x.conn
	}
	return nil
}

// CallerHeader is the metadata in which a node forwarding a Sweep names
// the caller it forwards for; only a peer's is honoured. It is binary
// metadata (gRPC sends it in base64) because a caller's name is text of
// any script, a token's name or a certificate's, and gRPC refuses other
// than printable ASCII in a text header.
const CallerHeader = "netprobe-caller-bin"
