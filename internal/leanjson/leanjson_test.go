package leanjson

import (
	"encoding/json"
	"reflect"
	"testing"
)

// sample is a struct of every kind of field the scanner reads.
type sample struct {
	S string `json:"s"`
	N int    `json:"n"`
	L int64  `json:"l"`
	B bool   `json:"b"`
	O inner  `json:"o"`
}

type inner struct {
	X string `json:"x"`
	Y string `json:"y"`
}

// scanSample is a decoder built on Scanner, as ari's and call's are.
func scanSample(s string) (sample, bool) {
	var v sample
	sc := New(s)
	strs := [...]Field{{Key: "s", Dst: &v.S}}
	in := [...]Field{{Key: "x", Dst: &v.O.X}, {Key: "y", Dst: &v.O.Y}}
	sc.Object(func(key string) {
		switch key {
		case "n":
			sc.Int(&v.N)
		case "l":
			sc.Int64(&v.L)
		case "b":
			sc.Bool(&v.B)
		case "o":
			if !sc.Null() {
				sc.Object(func(key string) { sc.Field(key, in[:]) })
			}
		default:
			sc.Field(key, strs[:], "n", "l", "b", "o")
		}
	})
	return v, sc.Done()
}

func TestScanner(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		want sample
	}{
		{` { "s" : "a" , "n" : -12, "l": 123456789012345, "b": true, "o": {"x": "é", "z": [1, -2.5e+3, {"a": null}]} } `, true,
			sample{S: "a", N: -12, L: 123456789012345, B: true, O: inner{X: "é"}}},
		{`{"s":"a","s":null,"b":true,"b":false,"o":null,"n":null}`, true, sample{S: "a"}},
		{`{"skip":"\u00e9\n\"","t":[true,false,null,{}],"u":{}}`, true, sample{}},
		{`{}`, true, sample{}},
		{`{"s":"\u0041"}`, false, sample{}},         // escape in a kept string
		{"{\"s\":\"\xff\"}", false, sample{}},       // invalid UTF-8
		{`{"S":"a"}`, false, sample{}},              // differs by case
		{`{"O":{}}`, false, sample{}},               // differs by case from an other
		{`{"o":{"X":"a"}}`, false, sample{}},        // nested, by case
		{"{\"\u017f\":1}", false, sample{}},         // ſ folds to s
		{`{"n":1.0}`, false, sample{}},              // not an integer
		{`{"n":01}`, false, sample{}},               // leading zero
		{`{"l":1234567890123456}`, false, sample{}}, // 16 digits
		{`{"b":"true"}`, false, sample{}},           // wrong type
		{`{"s":1}`, false, sample{}},                // wrong type
		{`{"x":[1,]}`, false, sample{}},             // malformed
		{`{"x":"\q"}`, false, sample{}},             // bad escape in a skipped string
		{`{"s":"a"}}`, false, sample{}},             // trailing
		{`{"s":"a"`, false, sample{}},               // truncated
		{`[]`, false, sample{}},                     // not an object
		{`{"x":` + deep(70) + `}`, false, sample{}}, // too deep to skip
	} {
		got, ok := scanSample(tc.in)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func deep(n int) string {
	s := "1"
	for range n {
		s = "[" + s + "]"
	}
	return s
}

// FuzzScannerMatchesJSON: what the scanner accepts, it decodes as
// encoding/json does.
func FuzzScannerMatchesJSON(f *testing.F) {
	for _, s := range []string{
		`{"s":"a","n":-1,"l":2,"b":true,"o":{"x":"é","y":null},"z":[1,2.5e3,{"a":"\n"}]}`,
		`{"S":"a"}`, `{"s":null,"o":null}`, `{"n":-0}`, "{\"\u212a\":1}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := scanSample(string(b))
		if !ok {
			return
		}
		var want sample
		if err := json.Unmarshal(b, &want); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("scanner %+v\nencoding/json %+v, %v", got, want, err)
		}
	})
}
