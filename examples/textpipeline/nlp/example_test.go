package nlp_test

import (
	"fmt"
	"log"

	"github.com/jetserve/jetserve/examples/textpipeline/nlp"
)

func ExamplePreprocess() {
	doc := nlp.Preprocess("Dr. Smith didn't like the movies. The actors were running around!")
	for _, s := range doc.Sentences {
		fmt.Printf("%q -> %q\n", s.Text, s.Terms())
	}
	// Output:
	// "Dr. Smith didn't like the movies." -> ["dr" "smith" "not" "like" "movi"]
	// "The actors were running around!" -> ["actor" "run"]
}

func ExampleStem() {
	for _, w := range []string{"connections", "generalizations", "hopping", "ponies"} {
		fmt.Println(w, nlp.Stem(w))
	}
	// Output:
	// connections connect
	// generalizations gener
	// hopping hop
	// ponies poni
}

func ExampleModels() {
	models, err := nlp.NewModels() // once, at start-up; then share it
	if err != nil {
		log.Fatal(err)
	}
	doc := nlp.Preprocess("The headphones arrived quickly and the sound is superb. " +
		"Battery life is excellent, easily two days of music. " +
		"The case feels a little cheap, but the headphones themselves are great.")

	lang, conf := models.DetectLanguage(doc)
	fmt.Printf("language: %s (%.2f)\n", lang, conf)
	label, probs := models.Sentiment(doc)
	fmt.Printf("sentiment: %s (%.2f)\n", label, probs[label])
	for _, k := range models.Keywords(doc, 3) {
		fmt.Printf("keyword: %s\n", k.Term)
	}
	for _, s := range models.Summarize(doc, 1) {
		fmt.Printf("summary: %s\n", s)
	}
	// Output:
	// language: en (1.00)
	// sentiment: positive (1.00)
	// keyword: headphones
	// keyword: music
	// keyword: case
	// summary: The headphones arrived quickly and the sound is superb.
}
