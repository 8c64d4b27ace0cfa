//go:build !race

package service

// raceEnabled says the race detector is on: it makes allocations larger,
// so the tests that weigh memory do not.
const raceEnabled = false
