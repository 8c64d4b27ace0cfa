package probecli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/netprobe/netprobe/client"
)

// fleetNode is a node of a sweep from a fleet: its name and the address
// the server reached it at ("" for the server itself). Nodes of one name
// (a fleet that kept the default --node-name, the host name) are as many
// nodes as addresses.
type fleetNode struct{ name, addr string }

// sweepFrom runs the sweep from the nodes of --server's fleet that from
// selects, and prints the matrix, a column per node, and for each target
// how many nodes reached it. With quorum, every target must be reached
// from that many nodes; without, from every node asked, each of which
// must answer. A node whose results break the API fails the sweep
// whatever the quorum.
func (a *app) sweepFrom(ctx context.Context, from *client.Vantages, targets []client.SweepTarget, concurrency, quorum int) error {
	c, closeClient, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer closeClient()
	type rowKey struct {
		index  int
		target string
	}
	// cells are the outcomes by row, then node.
	cells := map[rowKey]map[fleetNode]cell{}
	var order []rowKey
	labels := map[rowKey]string{}
	for i, t := range targets {
		k := rowKey{i, ""}
		cells[k], labels[k] = map[fleetNode]cell{}, t.Address
		order = append(order, k)
	}
	var nodes []fleetNode
	seen := map[fleetNode]bool{}
	add := func(v *client.Vantage) fleetNode {
		n := fleetNode{v.Node, v.Addr}
		if !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
		return n
	}
	// failed is each node that failed as a whole, and why: its cells
	// without an answer say its code.
	failed := map[fleetNode]*client.VantageError{}
	var fanout *client.FanoutSummary
	opts := client.SweepOptions{Concurrency: concurrency, Timeout: a.Timeout, From: from}
	for r, err := range c.Sweep(ctx, targets, opts) {
		if err != nil {
			return err
		}
		if a.Output == "json" {
			writeSweepJSON(a.out, a.server, r)
		}
		switch {
		case r.Fanout != nil:
			fanout = r.Fanout
			continue
		case r.VantageErr != nil:
			failed[add(r.Vantage)] = r.VantageErr
			continue
		}
		n := add(r.Vantage)
		k := rowKey{r.Index, ""}
		if targets[r.Index].Expand != 0 {
			k.target = r.Target
			if _, ok := cells[k]; !ok {
				cells[k], labels[k] = map[fleetNode]cell{}, targets[r.Index].Address+" -> "+r.Target
				order = append(order, k)
			}
		}
		cells[k][n] = outcomeCell(r)
	}

	vantages := make([]client.Vantage, len(nodes))
	for i, n := range nodes {
		vantages[i] = client.Vantage{Node: n.name, Addr: n.addr}
	}
	names := map[fleetNode]string{}
	for i, name := range client.VantageNames(vantages) {
		names[nodes[i]] = name
	}
	// The columns, in the order of their names (and, were two names one,
	// of what they stand for).
	slices.SortFunc(nodes, func(x, y fleetNode) int {
		return cmp.Or(cmp.Compare(names[x], names[y]), cmp.Compare(x.addr, y.addr), cmp.Compare(x.name, y.name))
	})

	expanded := map[int]bool{}
	for _, k := range order {
		if k.target != "" {
			expanded[k.index] = true
		}
	}
	slices.SortStableFunc(order, func(x, y rowKey) int { return x.index - y.index })
	var (
		rows    []*row
		reached []string
		short   []string
	)
	for _, k := range order {
		if k.target == "" && expanded[k.index] {
			continue
		}
		r := &row{label: labels[k]}
		ok := 0
		for _, n := range nodes {
			c, answered := cells[k][n]
			if !answered {
				c = cell{text: "no answer"}
				if e := failed[n]; e != nil {
					c.text = client.Printable(e.Code)
				}
			}
			if c.ok {
				ok++
			}
			r.cells = append(r.cells, c)
		}
		rows = append(rows, r)
		reached = append(reached, fmt.Sprintf("%s reachable from %d of %s", r.label, ok, plural(len(nodes), "node")))
		if need := cmp.Or(quorum, len(nodes)); ok < need {
			short = append(short, r.label)
		}
	}
	if a.Output != "json" {
		columns := make([]vantage, len(nodes))
		for i, n := range nodes {
			columns[i] = vantage{name: names[n]}
		}
		a.printMatrix(columns, rows)
	}
	var broken []string
	for _, n := range nodes {
		if e := failed[n]; e != nil {
			fmt.Fprintf(a.err, "probe: node %s: %s\n", names[n], client.Printable(e.Error()))
			if errors.Is(e, client.ErrProtocol) {
				broken = append(broken, names[n])
			}
		}
	}
	if fanout != nil && fanout.Skipped > 0 {
		fmt.Fprintf(a.err, "probe: asked the first %d of the %s that matched (--limit)\n", fanout.Asked, plural(fanout.Asked+fanout.Skipped, "node"))
	}
	for _, line := range reached {
		fmt.Fprintf(a.err, "probe: %s\n", line)
	}
	if len(failed) > 0 {
		fmt.Fprintf(a.err, "probe: %d of %s failed as a whole\n", len(failed), plural(len(nodes), "node"))
	}
	switch {
	case len(nodes) == 0:
		// Only a broken server says nothing of any node: no node matching
		// is an error of the call.
		return exitError{exitSweepFailed, "sweep: the server sent no node's results"}
	case len(broken) > 0:
		// What a node says of the targets cannot be counted once it
		// broke the API: no quorum makes up for it.
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %s sent results that break the API (protocol error), whatever --quorum", strings.Join(broken, ", "))}
	case quorum > len(nodes):
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: quorum %d not met: no target can be reached from more than the %s asked (--quorum)", quorum, plural(len(nodes), "node"))}
	case len(short) > 0 && quorum > 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %s reached from fewer than %s (--quorum)", strings.Join(short, ", "), plural(quorum, "node"))}
	case len(short) > 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %s not reached from every node", strings.Join(short, ", "))}
	case len(failed) > 0 && quorum == 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %d of %s failed as a whole: without --quorum, every node asked must answer", len(failed), plural(len(nodes), "node"))}
	}
	return nil
}
