package textpipeline

import "github.com/jetserve/jetserve/pkg/serve"

// App declares the text application (route /text): the Pipeline ingress
// with the models it calls through handles (its uses) and each
// deployment's code defaults, followed by more deployments of the same
// application (the example adds training's Trainer). `jetserve build`
// writes it into examples/config.yaml.
func App(more ...serve.Deployment) serve.App {
	model := func(name, handler string) serve.Deployment {
		return serve.Deploy(name, handler, serve.MaxOngoingRequests(16), serve.CPU(0.25), serve.Memory("64Mi"))
	}
	return serve.App{
		Name: "text", RoutePrefix: "/text", Ingress: "Pipeline",
		Deployments: append([]serve.Deployment{
			serve.Deploy("Pipeline", HandlerPipeline, serve.NumReplicas(2), serve.MaxOngoingRequests(32), serve.CPU(0.25),
				serve.UserConfig(PipelineConfig{SummarySentences: 2, Keywords: 5, Version: "v1"}),
				serve.Uses("Preprocess", "Sentiment", "Keywords", "Summarizer")),
			model("Preprocess", HandlerPreprocess),
			model("Sentiment", HandlerSentiment),
			model("Keywords", HandlerKeywords),
			model("Summarizer", HandlerSummarizer),
		}, more...),
	}
}
