// Package p2c is the power-of-two-choices replica picker: among the
// replicas that have room, sample two at random and take the less loaded.
// It is pure (no I/O, no clock, no locks); callers pass the random source.
package p2c

// Ineligible marks a candidate that must not be picked (full, draining,
// unreachable or already tried).
const Ineligible = -1

// Pick returns the index in loads of the chosen candidate, or -1 when no
// candidate is eligible. loads[i] is candidate i's estimated queue length,
// or Ineligible. intn(n) must return a uniform integer in [0, n).
//
// With one eligible candidate it is returned; with more, two distinct
// eligible candidates are sampled uniformly and the one with the lower load
// wins (the first sampled on a tie). Pick does not allocate.
func Pick(loads []int, intn func(n int) int) int {
	k := 0
	for _, l := range loads {
		if l >= 0 {
			k++
		}
	}
	switch k {
	case 0:
		return -1
	case 1:
		for i, l := range loads {
			if l >= 0 {
				return i
			}
		}
	}
	a := intn(k)
	b := intn(k - 1)
	if b >= a {
		b++
	}
	ia, ib := nth(loads, a), nth(loads, b)
	if loads[ib] < loads[ia] {
		return ib
	}
	return ia
}

// nth returns the index of the n-th (0-based) eligible candidate.
func nth(loads []int, n int) int {
	for i, l := range loads {
		if l < 0 {
			continue
		}
		if n == 0 {
			return i
		}
		n--
	}
	return -1
}
