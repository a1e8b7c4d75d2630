// Package voicesearch is the distributed-coroutines RFC's voice search as
// a jetserve application: a request flow decided at run time.
//
//	text = speech_to_text(question_speech)
//	if "what" in text: return question_answering(text)
//	return text_to_speech(search(text))
//
// Every step is a real (small) computation. "Speech" is a tone code (see
// speech.go): SpeechToText finds the symbols of a waveform and tells
// their tones with Goertzel filters, TextToSpeech synthesises them. QA
// answers with the fact of a small corpus closest to the question, Search
// ranks a small document set — both by TF-IDF cosine over stemmed words
// (the text pipeline's nlp package).
//
// The flow ships twice (App): as Go code — the VoiceSearch ingress calls
// the four deployments through handles and decides in plain Go (app
// "voice") — and as a declarative graph the ingress runs, a switch on the
// transcript (app "voice-graph"). Deployments are immutable once built and
// safe for concurrent use.
package voicesearch

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// Handler names.
const (
	HandlerVoiceSearch  = "voice.VoiceSearch"
	HandlerSpeechToText = "voice.SpeechToText"
	HandlerQA           = "voice.QA"
	HandlerSearch       = "voice.Search"
	HandlerTextToSpeech = "voice.TextToSpeech"
)

var (
	//go:embed data/facts.txt
	factsData string
	//go:embed data/docs.txt
	docsData string
)

// Register adds the voice search deployments to reg.
func Register(reg *serve.Registry) error {
	for name, ctor := range map[string]serve.Constructor{
		HandlerVoiceSearch:  NewVoiceSearch,
		HandlerSpeechToText: newSpeechToText,
		HandlerQA:           newQA,
		HandlerSearch:       newSearch,
		HandlerTextToSpeech: newTextToSpeech,
	} {
		if err := reg.Register(name, ctor); err != nil {
			return err
		}
	}
	return nil
}

// Transcript is SpeechToText's answer.
type Transcript struct {
	Text string `json:"text"`
}

// Answer is QA's answer; Text is the answer (what would be spoken).
type Answer struct {
	Question string  `json:"question"`
	Text     string  `json:"text"`
	Score    float64 `json:"score"`
}

// Results is Search's answer; Text is what to say about them.
type Results struct {
	Query   string `json:"query"`
	Results []hit  `json:"results"`
	Text    string `json:"text"`
}

// Spoken is TextToSpeech's answer: the fields of its input object, with
// the waveform of its "text" added as "speech".
type Spoken map[string]any

// Reply is VoiceSearch's answer: the transcript and either the answer to
// a question or the search results with their speech.
type Reply struct {
	Transcript string   `json:"transcript"`
	Answer     *Answer  `json:"answer,omitempty"`
	Results    *Results `json:"results,omitempty"`
	Speech     *Audio   `json:"speech,omitempty"`
}

// asksWhat is the RFC's `"what" in text`, as a word.
var asksWhat = regexp.MustCompile(`\bwhat\b`)

// WhatCondition is the same test as a graph switch condition.
const WhatCondition = `$.text matches "\\bwhat\\b"`

func newSpeechToText(context.Context, serve.Init) (serve.Handler, error) {
	return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		var a Audio
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		samples, err := a.Samples()
		if err != nil {
			return nil, serve.Errorf(http.StatusBadRequest, "audio: %v", err)
		}
		text, err := Recognize(samples)
		if err != nil {
			return nil, serve.Errorf(http.StatusUnprocessableEntity, "speech to text: %v", err)
		}
		return serve.JSON(Transcript{Text: text})
	}), nil
}

func newQA(context.Context, serve.Init) (serve.Handler, error) {
	facts := readLines(factsData)
	x, err := newIndex(make([]string, len(facts)), facts)
	if err != nil {
		return nil, err
	}
	return onTranscript(func(in Transcript) any {
		a := Answer{Question: in.Text, Text: "I do not know."}
		if hits := x.search(in.Text, 1); len(hits) > 0 {
			a.Text, a.Score = hits[0].Text, hits[0].Score
		}
		return a
	}), nil
}

// onTranscript is a handler of Transcript requests (text required)
// answering answer's value as JSON.
func onTranscript(answer func(Transcript) any) serve.Handler {
	return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		var in Transcript
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		if strings.TrimSpace(in.Text) == "" {
			return nil, serve.Errorf(http.StatusBadRequest, "text is required")
		}
		return serve.JSON(answer(in))
	})
}

func newSearch(context.Context, serve.Init) (serve.Handler, error) {
	var titles, texts []string
	for _, l := range readLines(docsData) {
		title, text, ok := strings.Cut(l, "\t")
		if !ok {
			return nil, fmt.Errorf("search corpus: want title<TAB>text, got %q", l)
		}
		titles, texts = append(titles, title), append(texts, text)
	}
	x, err := newIndex(titles, texts)
	if err != nil {
		return nil, err
	}
	return onTranscript(func(in Transcript) any {
		r := Results{Query: in.Text, Results: x.search(in.Text, 3)}
		if r.Results == nil {
			r.Results = []hit{}
		}
		switch len(r.Results) {
		case 0:
			r.Text = "nothing found"
		default:
			r.Text = "top result: " + r.Results[0].Title
		}
		return r
	}), nil
}

func newTextToSpeech(context.Context, serve.Init) (serve.Handler, error) {
	return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		var in Spoken
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		if in == nil {
			return nil, serve.Errorf(http.StatusBadRequest, `want a JSON object with "text"`)
		}
		text, _ := in["text"].(string)
		if Speakable(text) == "" {
			return nil, serve.Errorf(http.StatusBadRequest, `"text" must hold something to say (letters or digits)`)
		}
		in["speech"] = NewAudio(Synthesize(text))
		return serve.JSON(in)
	}), nil
}

// VoiceSearch is the ingress of app "voice": the RFC's coroutine in Go.
type VoiceSearch struct {
	stt, qa, search, tts *serve.Handle
	methods              serve.Methods
}

// NewVoiceSearch builds the ingress with handles to the four steps.
func NewVoiceSearch(_ context.Context, init serve.Init) (serve.Handler, error) {
	v := &VoiceSearch{stt: init.Handle("SpeechToText"), qa: init.Handle("QA"), search: init.Handle("Search"),
		tts: init.Handle("TextToSpeech")}
	v.methods = serve.Methods{"": v.voiceSearch, "speak": v.speak}
	return v, nil
}

// ServeRequest: POST / takes a question's waveform (Audio); POST /speak
// takes {"text"} and answers its waveform (to make a question with).
func (v *VoiceSearch) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	return v.methods.ServeRequest(ctx, req)
}

func (v *VoiceSearch) voiceSearch(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	tr, err := serve.CallJSON[Transcript](ctx, v.stt, "", rawJSON(req.Body))
	if err != nil {
		return nil, err
	}
	if asksWhat.MatchString(tr.Text) {
		a, err := serve.CallJSON[Answer](ctx, v.qa, "", tr)
		if err != nil {
			return nil, err
		}
		return serve.JSON(Reply{Transcript: tr.Text, Answer: &a})
	}
	res, err := serve.CallJSON[Results](ctx, v.search, "", tr)
	if err != nil {
		return nil, err
	}
	spoken, err := serve.CallJSON[struct {
		Speech Audio `json:"speech"`
	}](ctx, v.tts, "", res)
	if err != nil {
		return nil, err
	}
	return serve.JSON(Reply{Transcript: tr.Text, Results: &res, Speech: &spoken.Speech})
}

func (v *VoiceSearch) speak(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	var in Transcript
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	spoken, err := serve.CallJSON[struct {
		Speech Audio `json:"speech"`
	}](ctx, v.tts, "", in)
	if err != nil {
		return nil, err
	}
	return serve.JSON(spoken.Speech)
}

// rawJSON passes a body on to CallJSON unchanged.
type rawJSON []byte

// MarshalJSON returns the body itself (an empty one is null).
func (r rawJSON) MarshalJSON() ([]byte, error) {
	if len(r) == 0 {
		return []byte("null"), nil
	}
	return r, nil
}

// Apps declares the two applications: "voice" (the flow in Go, through
// handles) and "voice-graph" (the same flow as a switch graph).
func Apps() []serve.App {
	step := func(name, handler string) serve.Deployment {
		return serve.Deploy(name, handler, serve.MaxOngoingRequests(16), serve.CPU(0.1), serve.Memory("32Mi"))
	}
	steps := func() []serve.Deployment {
		return []serve.Deployment{step("SpeechToText", HandlerSpeechToText), step("QA", HandlerQA),
			step("Search", HandlerSearch), step("TextToSpeech", HandlerTextToSpeech)}
	}
	return []serve.App{
		{
			Name: "voice", RoutePrefix: "/voice", Ingress: "VoiceSearch",
			Comment: "The RFC's voice search as Go code: POST /voice/speak {\"text\": …} makes a question's\n" +
				"waveform, POST /voice/ with it answers (a question with \"what\") or searches and speaks.",
			Deployments: append([]serve.Deployment{
				serve.Deploy("VoiceSearch", HandlerVoiceSearch, serve.MaxOngoingRequests(32), serve.CPU(0.1),
					serve.Uses("SpeechToText", "QA", "Search", "TextToSpeech")),
			}, steps()...),
		},
		{
			Name: "voice-graph", RoutePrefix: "/voice-graph",
			Comment: "The same flow as a declarative graph the ingress runs: speech to text, then a switch\n" +
				"on the transcript (question answering, or search and text to speech).",
			Deployments: steps(),
			Graph: &config.Graph{Nodes: []config.GraphNode{
				{Name: "root", Type: config.NodeSequence, Steps: []config.GraphStep{
					{Deployment: "SpeechToText"},
					{Node: "route", Data: config.DataResponse},
				}},
				{Name: "route", Type: config.NodeSwitch, Steps: []config.GraphStep{
					{Name: "question", Deployment: "QA", Condition: WhatCondition},
					{Name: "search", Node: "search"},
				}},
				{Name: "search", Type: config.NodeSequence, Steps: []config.GraphStep{
					{Deployment: "Search"},
					{Deployment: "TextToSpeech", Data: config.DataResponse},
				}},
			}},
		},
	}
}
