// Pure-Java pre/post-processing shared by the app and its JVM tests: no Android imports, Java 8.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_1_8
    targetCompatibility = JavaVersion.VERSION_1_8
}

tasks.withType<JavaCompile>().configureEach {
    // --release 8 also checks that only the Java 8 API is used (what Android's desugared runtime has)
    options.release.set(8)
}

dependencies {
    // Android ships org.json in the platform; compile against the same API from Maven Central.
    compileOnly(libs.json)
    testImplementation(libs.json)
    testImplementation(libs.junit)
}
