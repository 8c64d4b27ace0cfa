package probecli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/netprobe/netprobe/client"
)

// sweepFrom runs the sweep from the nodes of --server's fleet that from
// selects, and prints the matrix, a column per node, and for each target
// how many nodes reached it. With quorum, every target must be reached
// from that many nodes; without, from every node asked.
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
	cells := map[rowKey]map[string]cell{}
	var order []rowKey
	labels := map[rowKey]string{}
	for i, t := range targets {
		k := rowKey{i, ""}
		cells[k], labels[k] = map[string]cell{}, t.Address
		order = append(order, k)
	}
	nodes := map[string]bool{}
	// failedAs is the code of each node that failed as a whole: its cells
	// without an answer say it.
	failedAs := map[string]string{}
	var (
		failures []string
		fanout   *client.FanoutSummary
	)
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
			nodes[r.Vantage.Node] = true
			failedAs[r.Vantage.Node] = r.VantageErr.Code
			failures = append(failures, fmt.Sprintf("node %s: %s", r.Vantage.Node, r.VantageErr))
			continue
		}
		node := r.Vantage.Node
		nodes[node] = true
		k := rowKey{r.Index, ""}
		if targets[r.Index].Expand != 0 {
			k.target = r.Target
			if _, ok := cells[k]; !ok {
				cells[k], labels[k] = map[string]cell{}, targets[r.Index].Address+" -> "+r.Target
				order = append(order, k)
			}
		}
		cells[k][node] = outcomeCell(r)
	}
	names := slices.Sorted(maps.Keys(nodes))
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
		for _, n := range names {
			c, answered := cells[k][n]
			if !answered {
				c = cell{text: "no answer"}
				if code, failed := failedAs[n]; failed {
					c.text = code
				}
			}
			if c.ok {
				ok++
			}
			r.cells = append(r.cells, c)
		}
		rows = append(rows, r)
		reached = append(reached, fmt.Sprintf("%s reachable from %d of %s", r.label, ok, plural(len(names), "node")))
		if need := quorum; need == 0 && ok < len(names) || need > 0 && ok < need {
			short = append(short, r.label)
		}
	}
	if a.Output != "json" {
		columns := make([]vantage, len(names))
		for i, n := range names {
			columns[i] = vantage{name: n}
		}
		a.printMatrix(columns, rows)
	}
	for _, f := range failures {
		fmt.Fprintf(a.err, "probe: %s\n", f)
	}
	for _, line := range reached {
		fmt.Fprintf(a.err, "probe: %s\n", line)
	}
	if fanout != nil && fanout.Failed > 0 {
		fmt.Fprintf(a.err, "probe: %d of %s failed as a whole\n", fanout.Failed, plural(fanout.Asked, "node"))
	}
	switch {
	case len(short) > 0 && quorum > 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %s reached from fewer than %d nodes (--quorum)", strings.Join(short, ", "), quorum)}
	case len(short) > 0:
		return exitError{exitSweepFailed, fmt.Sprintf("sweep: %s not reached from every node", strings.Join(short, ", "))}
	}
	return nil
}
