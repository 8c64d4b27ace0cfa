package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/netlab"
	"github.com/netprobe/netprobe/internal/probetest"
)

// fanoutTargets is how many targets the fan-out sweeps from every node.
const fanoutTargets = 100

// fanoutPort is the nodes' gRPC port.
const fanoutPort = 7070

// benchFanout runs each fleet size of o.nodes in turn: as many probed, each
// in a network namespace of its own on one LAN, and fanoutTargets listeners
// in another, swept from all the nodes in one call to the first, the entry.
// It sets the call's wall time against the same sweep sent to every node
// directly, all at once, so that the nodes share this machine's CPUs as
// they do in the fan-out (the slowest node's is the baseline), and against
// each node's sweep run alone; and it reports the entry's peak RSS while
// fanning out, against that of a node that is only asked, and the results
// received against those expected.
func benchFanout(ctx context.Context, bin probedBin, o options) ([]row, error) {
	var rows []row
	for f := range strings.SplitSeq(o.nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n > 250 {
			return nil, fmt.Errorf("-nodes %q: want sizes from 2 to 250, the hosts of one netlab LAN", f)
		}
		err = withLab(func(l *lab) error {
			r, err := fanout(ctx, l, bin, n, o.rounds)
			rows = append(rows, r...)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%d nodes: %w", n, err)
		}
	}
	return rows, nil
}

// fleetNode is one probed of the bench's fleet, and the caller's
// connection to it.
type fleetNode struct {
	*probetest.Probed
	name string
	conn *grpc.ClientConn
}

func fanout(ctx context.Context, l *lab, bin probedBin, size, rounds int) ([]row, error) {
	if err := neighborRoom(l, size); err != nil {
		return nil, err
	}
	lan := netlab.NewLAN(l)
	caller, target := lan.AddHost(l), lan.AddHost(l)
	var targets []*netprobev1.SweepTarget
	for i := range fanoutTargets {
		ln := target.Listen(l, netip.AddrPortFrom(target.V4, uint16(10000+i)).String())
		go probetest.AcceptAndClose(ln)
		targets = append(targets, &netprobev1.SweepTarget{Target: &netprobev1.Target{Host: target.V4.String(), Port: uint32(10000 + i)}})
	}
	var hosts []*netlab.Host
	var peers []string
	for range size {
		h := lan.AddHost(l)
		hosts = append(hosts, h)
		// Literal addresses: the answer of a name with 200 A records is
		// more than Go's resolver reads over UDP (1232 bytes), and
		// netlab's DNS server does not fall back to TCP as a cluster's
		// does.
		peers = append(peers, "--peers="+netip.AddrPortFrom(h.V4, fanoutPort).String())
	}
	var nodes []*fleetNode
	for i, h := range hosts {
		name := fmt.Sprintf("n%03d", i+1)
		args := append([]string{"--listen=" + netip.AddrPortFrom(h.V4, fanoutPort).String(), "--plaintext", "--node-name=" + name}, unlimited...)
		// Only the entry is given the peers. A node that is only asked
		// needs none, and in a real fleet the mesh of every node watching
		// every other is spread over as many machines; here it would be
		// size² connections on one, sharing the CPUs the figures are of.
		if i == 0 {
			args = append(args, peers...)
		}
		p, err := probetest.Launch(bin.prepare(h.Command(bin.path, args...)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		l.Cleanup(p.Stop)
		conn, err := dialIn(caller, p.Addr)
		if err != nil {
			return nil, err
		}
		l.Cleanup(func() { conn.Close() })
		nodes = append(nodes, &fleetNode{Probed: p, name: name, conn: conn})
	}
	entry, asked := nodes[0], nodes[1]
	// The entry has heard from every node.
	deadline := time.Now().Add(2 * time.Minute)
	for entry.Logged("peer up") < len(nodes) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the entry heard from %d of %d nodes in 2 minutes", entry.Logged("peer up"), len(nodes))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}

	// Warm every path up, then measure the entry and a node it asks from
	// here on.
	if _, err := fanoutSweep(ctx, entry, targets, len(nodes)); err != nil {
		return nil, err
	}
	if _, err := directSweeps(ctx, nodes, targets); err != nil {
		return nil, err
	}
	idle, err := probetest.RSS(entry.Cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	for _, nd := range []*fleetNode{entry, asked} {
		if err := resetPeak(nd.Cmd.Process.Pid); err != nil {
			return nil, err
		}
	}

	var fanWalls, directWalls []time.Duration
	var got fanoutResult
	for range rounds {
		r, err := fanoutSweep(ctx, entry, targets, len(nodes))
		if err != nil {
			return nil, err
		}
		fanWalls = append(fanWalls, r.wall)
		// The round that lost the most is the one reported.
		if r.received <= got.received || got.wall == 0 {
			got = r
		}
		walls, err := directSweeps(ctx, nodes, targets)
		if err != nil {
			return nil, err
		}
		directWalls = append(directWalls, slices.Max(walls))
	}
	entryPeak, err := probetest.PeakRSS(entry.Cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	askedPeak, err := probetest.PeakRSS(asked.Cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	// Each node alone, one after another: the network and CPUs its own.
	var alone []time.Duration
	for _, nd := range nodes {
		walls, err := directSweeps(ctx, []*fleetNode{nd}, targets)
		if err != nil {
			return nil, err
		}
		alone = append(alone, walls[0])
	}

	fan, direct, slowest := median(fanWalls), median(directWalls), slices.Max(alone)
	expected := len(nodes) * fanoutTargets
	return []row{
		{fmt.Sprintf("fan-out Sweep, %d nodes x %d targets", len(nodes), fanoutTargets), ms(fan), ms(direct), ratio(fan.Seconds(), direct.Seconds()),
			fmt.Sprintf("goal <= 1.2; baseline: the slowest node's own sweep, every node asked directly at once; medians of %d", rounds)},
		{"  each node's sweep alone, the slowest", "", ms(slowest), ratio(fan.Seconds(), slowest.Seconds()), "one node at a time, the CPUs its own"},
		{"  results received", fmt.Sprintf("%d of %d", got.received, expected), "", "",
			fmt.Sprintf("%d lost, %d duplicated, %d failed probes, %d failed nodes; asked %d, answered %d", expected-got.received, got.duplicates, got.failedProbes, got.failedNodes, got.summary.GetAsked(), got.summary.GetAnswered())},
		{"  entry's peak RSS while fanning out", fmt.Sprintf("%d MiB", entryPeak>>20), fmt.Sprintf("%d MiB asked", askedPeak>>20), "",
			fmt.Sprintf("goal <= 64 MiB; baseline: a node the entry asks; the entry %d MiB idle, %d peers", idle>>20, len(nodes)-1)},
	}, nil
}

// neighborRoom makes room in the machine's neighbour tables for a fleet of
// size nodes, and puts the limits back when l ends. The tables are the
// machine's, shared by every namespace (arp_cache, ndisc_cache): past
// gc_thresh3 entries (1024 by default) the kernel refuses new ones, and a
// node's first packets to a peer are dropped ("neighbor table overflow")
// as they never are on a fleet of machines. The entry, the caller and the
// target each know every node, and every node them.
func neighborRoom(l *lab, size int) error {
	need := 8*size + 256
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, thresh := range []string{"gc_thresh3", "gc_thresh2"} {
			file := "/proc/sys/net/" + fam + "/neigh/default/" + thresh
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			was, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if was >= need {
				continue
			}
			if err := os.WriteFile(file, []byte(strconv.Itoa(need)), 0); err != nil {
				return err
			}
			l.Cleanup(func() {
				if err := os.WriteFile(file, b, 0); err != nil {
					l.Errorf("%s: putting %d back: %v", file, was, err)
				}
			})
		}
	}
	return nil
}

// fanoutResult is what one fan-out brought back.
type fanoutResult struct {
	wall time.Duration
	// received counts the results of distinct node and target;
	// duplicates those of a pair already received.
	received, duplicates, failedProbes, failedNodes int
	summary                                         *netprobev1.FanoutSummary
}

// fanoutSweep sweeps targets from every node, through the entry.
func fanoutSweep(ctx context.Context, entry *fleetNode, targets []*netprobev1.SweepTarget, nodes int) (fanoutResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	stream, err := netprobev1.NewProbeServiceClient(entry.conn).Sweep(ctx, &netprobev1.SweepRequest{Targets: targets,
		Vantages: &netprobev1.VantageSelector{All: true, Limit: uint32(nodes)}})
	if err != nil {
		return fanoutResult{}, err
	}
	type key struct {
		node  string
		index uint32
	}
	seen := map[key]bool{}
	var res fanoutResult
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("fan-out: %w", err)
		}
		switch k := (key{r.GetVantage().GetNode(), r.GetIndex()}); {
		case r.GetFanout() != nil:
			res.summary = r.GetFanout()
		case r.GetVantageError() != nil:
			res.failedNodes++
		case seen[k]:
			res.duplicates++
		default:
			seen[k] = true
			res.received++
			if r.GetAbandoned() || r.GetConnect().GetError() != nil {
				res.failedProbes++
			}
		}
	}
	res.wall = time.Since(start)
	if res.summary == nil {
		return res, errors.New("fan-out: the stream ended without its counts")
	}
	return res, nil
}

// directSweeps sweeps targets from each of nodes, asked directly and all
// at once, and returns each one's wall time.
func directSweeps(ctx context.Context, nodes []*fleetNode, targets []*netprobev1.SweepTarget) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	walls := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() {
			start := time.Now()
			stream, err := netprobev1.NewProbeServiceClient(nd.conn).Sweep(ctx, &netprobev1.SweepRequest{Targets: targets})
			if err != nil {
				errs[i] = err
				return
			}
			n := 0
			for {
				r, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					errs[i] = fmt.Errorf("%s: %w", nd.name, err)
					return
				}
				if r.GetAbandoned() || r.GetConnect().GetError() != nil {
					errs[i] = fmt.Errorf("%s: target %d failed: %v", nd.name, r.GetIndex(), r.GetConnect().GetError())
					return
				}
				n++
			}
			walls[i] = time.Since(start)
			if n != len(targets) {
				errs[i] = fmt.Errorf("%s: %d results of %d", nd.name, n, len(targets))
			}
		})
	}
	wg.Wait()
	return walls, errors.Join(errs...)
}

// dialIn is a client connection to addr, dialled from inside host's
// namespace.
func dialIn(host *netlab.Host, addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var c net.Conn
			err := host.Do(func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return c, err
		}))
}

// resetPeak resets process pid's peak RSS (VmHWM) to what it holds now
// (proc(5), clear_refs).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
