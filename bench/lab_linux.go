package main

import (
	"errors"
	"fmt"
	"testing"
)

// lab is the testing.TB that internal/netlab and probetest's helpers ask
// for, in a part of the bench rather than a test: what they clean up is
// cleaned up, last first, when the part ends, and a failure ends the part
// with its message. Those helpers call only the methods below; the
// embedded interface is nil, and calling any other would panic.
type lab struct {
	testing.TB
	cleanups []func()
	errs     []error
}

// labFailure is a helper's Fatal, on its way to withLab.
type labFailure struct{ err error }

func (l *lab) Helper()             {}
func (l *lab) Cleanup(f func())    { l.cleanups = append(l.cleanups, f) }
func (l *lab) Logf(string, ...any) {}
func (l *lab) Errorf(format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf(format, args...))
}
func (l *lab) Fatalf(format string, args ...any) { panic(labFailure{fmt.Errorf(format, args...)}) }
func (l *lab) Fatal(args ...any)                 { panic(labFailure{errors.New(fmt.Sprint(args...))}) }

// Skipf is a failure: a bench part that cannot build its network has no
// figures to print.
func (l *lab) Skipf(format string, args ...any) { l.Fatalf(format, args...) }

// withLab runs fn with a lab, then the lab's cleanups; its error is fn's,
// a helper's Fatal, or what a helper reported while cleaning up.
func withLab(fn func(*lab) error) (err error) {
	l := &lab{}
	defer func() {
		for i := len(l.cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, failureOf(l.cleanups[i]))
		}
		err = errors.Join(append([]error{err}, l.errs...)...)
	}()
	if failed := failureOf(func() { err = fn(l) }); failed != nil {
		return failed
	}
	return err
}

// failureOf runs fn, and returns the Fatal it ended with, or nil.
func failureOf(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(labFailure)
			if !ok {
				panic(r)
			}
			err = f.err
		}
	}()
	fn()
	return nil
}
