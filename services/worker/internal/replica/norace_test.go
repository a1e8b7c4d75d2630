//go:build !race

package replica

// raceEnabled: the race detector changes the scheduling that tests of
// batching measure.
const raceEnabled = false
