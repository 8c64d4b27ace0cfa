//go:build !linux

package main

import (
	"context"
	"errors"
)

// benchFanout needs a network namespace per node: Linux only.
func benchFanout(context.Context, probedBin, options) ([]row, error) {
	return nil, errors.New("the fanout part needs Linux's network namespaces; run the others with -only")
}
