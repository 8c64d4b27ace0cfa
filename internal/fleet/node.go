// Package fleet makes a probed one node of a fleet: who it is (its name
// and labels, which Describe gives), who its peers are (found through
// DNS, as a Kubernetes headless Service lists them), and the Sweep that
// one call to any node runs from many (the fan-out).
package fleet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/buildinfo"
	"github.com/netprobe/netprobe/internal/statuspage"
)

// Config is a node's part in a fleet. Each setting is declared once, by
// its field's tags (see internal/settings).
type Config struct {
	// NodeName names this node; the host name when empty.
	NodeName string `flag:"node-name" env:"NETPROBE_NODE_NAME" group:"Fleet" help:"This node's name in a fleet, as Describe and a fanned-out Sweep's results give it; the host name by default."`
	// Labels are KEY=VALUE pairs describing where the node is.
	Labels []string `flag:"label" env:"NETPROBE_LABEL" sep:";" group:"Fleet" help:"A label of this node, KEY=VALUE (zone=eu-1, region=eu, rack=r7), repeatable (; between them in the environment): a fanned-out Sweep selects nodes by them. Keys and values are at most 63 letters, digits and - _ . /"`
	// Peers are where the fleet's nodes are found.
	Peers []string `flag:"peers" env:"NETPROBE_PEERS" sep:";" group:"Fleet" help:"The fleet's nodes, this one among them or not: dns:///NAME:PORT (every A and AAAA record of NAME, as a Kubernetes headless Service has) or HOST:PORT, repeatable. A Sweep with vantages fans out to them; without any, such a Sweep is FAILED_PRECONDITION."`
	// PeersRefresh is how often the peers' names are resolved again.
	PeersRefresh time.Duration `flag:"peers-refresh" env:"NETPROBE_PEERS_REFRESH" default:"30s" group:"Fleet" help:"How often --peers' names are resolved again, and each peer asked who it is; a peer that fails is looked at again at once."`
	// MaxFanout caps the nodes of one fanned-out Sweep.
	MaxFanout int `flag:"max-fanout" env:"NETPROBE_MAX_FANOUT" default:"500" group:"Fleet" help:"Most nodes one fanned-out Sweep may ask; a selector whose limit is over it is INVALID_ARGUMENT."`
	// MaxFanoutProbes caps a fanned-out Sweep's probes, nodes times
	// targets.
	MaxFanoutProbes int `flag:"max-fanout-probes" env:"NETPROBE_MAX_FANOUT_PROBES" default:"100000" group:"Fleet" help:"Most probes one fanned-out Sweep may run in all, its nodes times its targets; more is RESOURCE_EXHAUSTED before any node is asked."`
	// PeerTokenFile holds the token this node shows its peers.
	PeerTokenFile string `flag:"peer-token-file" env:"NETPROBE_PEER_TOKEN_FILE" group:"Fleet" help:"A file holding the bearer token this node presents to its peers when it fans a Sweep out: the token alone (not NAME TOKEN), one of their --tokens-file whose name they list in --peer. Over TLS only (--peer-ca-file)."`
	// PeerCertFile and PeerKeyFile are the client certificate this node
	// presents to its peers, in place of or beside a token.
	PeerCertFile string `flag:"peer-cert-file" env:"NETPROBE_PEER_CERT_FILE" group:"Fleet" help:"A client certificate (PEM) this node presents to its peers when it fans a Sweep out, for peers that require one (--tls-client-ca); its identity must be one they list in --peer. Over TLS only (--peer-ca-file)."`
	PeerKeyFile  string `flag:"peer-key-file" env:"NETPROBE_PEER_KEY_FILE" group:"Fleet" help:"The private key (PEM) of --peer-cert-file."`
	// PeerCAFile, when set, makes the node talk to its peers over TLS,
	// trusting these CAs.
	PeerCAFile string `flag:"peer-ca-file" env:"NETPROBE_PEER_CA_FILE" group:"Fleet" help:"Talk to peers over TLS, trusting the CAs of this file (PEM); without it, plaintext."`
	// PeerServerName is the name peers' certificates are checked
	// against, when not their addresses.
	PeerServerName string `flag:"peer-server-name" env:"NETPROBE_PEER_SERVER_NAME" group:"Fleet" help:"The name every peer's certificate is checked against, such as the headless Service's (probed.netprobe.svc.cluster.local); without it, the address the peer is reached at, an IP its certificate must then hold. With --peer-ca-file."`
}

// Node is who this probed is.
type Node struct {
	// Name and Labels are the node's, as Config gives them.
	Name   string
	Labels map[string]string
	// Instance is a random name of this process: a node knows itself
	// among its peers by it.
	Instance string
}

// NewNode is the node cfg describes.
func NewNode(cfg Config) (*Node, error) {
	n := &Node{Name: cfg.NodeName, Labels: map[string]string{}}
	if n.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("--node-name: none given, and no host name: %w", err)
		}
		n.Name = host
	}
	if err := checkLabelText("--node-name", n.Name); err != nil {
		return nil, err
	}
	if len(cfg.Labels) > maxLabels {
		return nil, fmt.Errorf("--label: %d given, at most %d", len(cfg.Labels), maxLabels)
	}
	for _, l := range cfg.Labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		if err := checkLabelText("--label "+l+": key", k); err != nil {
			return nil, err
		}
		if err := checkLabelText("--label "+l+": value", v); err != nil {
			return nil, err
		}
		if _, dup := n.Labels[k]; dup {
			return nil, fmt.Errorf("--label %q: %s given twice", l, k)
		}
		n.Labels[k] = v
	}
	b := make([]byte, 8)
	rand.Read(b)
	n.Instance = hex.EncodeToString(b)
	return n, nil
}

// maxLabelText bounds a node name, a label key and a label value, as
// Kubernetes bounds its label values.
const maxLabelText = 63

// checkLabelText refuses what could not be a node name, a label key or
// value: empty, over maxLabelText, or other than letters, digits and
// - _ . /, so that it can be a Prometheus label value and a column of
// the CLI as it is.
func checkLabelText(what, s string) error {
	if s == "" || len(s) > maxLabelText {
		// Only the start of a long one: a refusal is small.
		shown := s[:min(len(s), maxLabelText)]
		if len(shown) < len(s) {
			shown += "..."
		}
		return fmt.Errorf("%s %q: want 1 to %d characters", what, shown, maxLabelText)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./", r)) {
			return fmt.Errorf("%s %q: only letters, digits and - _ . /", what, s)
		}
	}
	return nil
}

// Describe is the node as Describe answers it: with the longest probe
// timeout, the most targets of a Sweep and, with peers, the most nodes
// of a fan-out.
func (n *Node) Describe(maxTimeout time.Duration, maxSweepTargets, maxFanout int) *netprobev1.DescribeResponse {
	return &netprobev1.DescribeResponse{
		Node: n.Name, Labels: maps.Clone(n.Labels), Version: buildinfo.Version(), Instance: n.Instance,
		MaxTimeout: durationpb.New(maxTimeout), MaxSweepTargets: uint32(maxSweepTargets), MaxFanout: uint32(maxFanout),
	}
}

// Matches says whether a node of name and labels is one sel selects
// (sel's limit aside).
func Matches(sel *netprobev1.VantageSelector, name string, labels map[string]string) bool {
	if !sel.GetAll() && len(sel.GetNodes()) > 0 && !slices.Contains(sel.GetNodes(), name) {
		return false
	}
	for k, v := range sel.GetLabels() {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// LabelList is labels as "KEY=VALUE", sorted by key.
func LabelList(labels map[string]string) []string {
	out := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		out = append(out, k+"="+labels[k])
	}
	return out
}

// PageState is this node and its peers as the status page shows them.
func (f *Fleet) PageState() (node string, labels []string, peers []statuspage.PeerState) {
	for _, p := range f.peers.All() {
		peers = append(peers, statuspage.PeerState{Node: p.Node, Addr: p.Addr.String(), Labels: LabelList(p.Labels),
			Self: p.Self, Up: p.Up, LastContact: p.LastContact, Err: p.Err})
	}
	return f.node.Name, LabelList(f.node.Labels), peers
}
